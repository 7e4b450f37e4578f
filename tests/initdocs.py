"""OpenAPI documents for the `bastion init` tests, shaped like what FastAPI serves at
/openapi.json: an items API with an API key header, an OAuth2 password flow whose token URL
is the app's own, and public operations (`security: []`)."""

from __future__ import annotations

import copy
from typing import Any

_OK = {"200": {"description": "Successful Response"}}
_ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def fastapi_doc() -> dict[str, Any]:
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {"title": "Items API", "version": "0.1.0"},
            "security": [{"APIKeyHeader": []}],
            "paths": {
                "/health": {"get": {"security": [], "responses": _OK}},
                "/items": {
                    "get": {
                        "security": [],
                        "parameters": [
                            {
                                "name": "limit",
                                "in": "query",
                                "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                            }
                        ],
                        "responses": _OK,
                    },
                    "post": {
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Item"}
                                }
                            },
                        },
                        "responses": _OK,
                    },
                },
                "/items/{item_id}": {
                    "get": {"parameters": [_ITEM_ID], "responses": _OK},
                    "put": {
                        "parameters": [_ITEM_ID],
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Item"}
                                }
                            },
                        },
                        "responses": _OK,
                    },
                    "delete": {
                        "security": [{"OAuth2PasswordBearer": ["items:write"]}],
                        "parameters": [_ITEM_ID],
                        "responses": _OK,
                    },
                },
            },
            "components": {
                "schemas": {
                    "Item": {
                        "type": "object",
                        "required": ["name", "price"],
                        "properties": {
                            "name": {"type": "string"},
                            "price": {"type": "number"},
                        },
                    }
                },
                "securitySchemes": {
                    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "OAuth2PasswordBearer": {
                        "type": "oauth2",
                        "flows": {
                            "password": {
                                "tokenUrl": "token",
                                "scopes": {"items:write": "change items"},
                            }
                        },
                    },
                },
            },
        }
    )


def with_schemes(schemes: dict[str, Any], security: list[Any]) -> dict[str, Any]:
    """A one-operation document (`GET /things/{id}`) asking `security` of the schemes."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Things", "version": "1"},
        "paths": {
            "/things/{id}": {
                "get": {
                    "security": security,
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": _OK,
                }
            }
        },
        "components": {"securitySchemes": schemes},
    }
