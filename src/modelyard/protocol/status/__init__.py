"""The status page (``GET /``) and the JSON it polls (``GET /v2/status``): docs/status-page.md."""
