"""The Plan: a validated Config compiled into runtime objects, once per load or reload.

- `compile.py`: `compile_plan`, the walk over sites and routes;
- `facts.py`: per-site facts (TLS mode, HSTS line) worked out once;
- `context.py`: `BuildContext` and `RouteSpec`, what every builder is given;
- `handlers.py`: the registry of route kinds (proxy, s3, redirect, static, respond);
- `routes.py`, `runtime.py`: what a request meets: `CompiledRoute` and `Plan`.
"""

from bastion.plan.compile import compile_plan
from bastion.plan.context import BuildContext, RouteSpec
from bastion.plan.facts import SiteFacts
from bastion.plan.routes import CompiledRoute
from bastion.plan.runtime import Http2Settings, Plan

__all__ = [
    "BuildContext",
    "CompiledRoute",
    "Http2Settings",
    "Plan",
    "RouteSpec",
    "SiteFacts",
    "compile_plan",
]
