"""The bare HTTP floor: Starlette on uvicorn; reads the request body, returns a constant JSON body.

Run by ``bench/run.py`` as ``uvicorn floor_app:app --http httptools --loop uvloop``.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_BODY = (
    b'{"model_name":"floor","model_version":"1","outputs":[{"name":"OUTPUT","datatype":"FP32",'
    b'"shape":[1,10],"data":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]}]}'
)


async def infer(request: Request) -> Response:
    await request.body()
    return Response(_BODY, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b"")


app = Starlette(
    routes=[
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/health/ready", ready),
    ]
)
