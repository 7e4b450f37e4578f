"""OpenAPI documents for the `bastion init` tests, shaped like what FastAPI serves at
/openapi.json: an items API with an API key header, an OAuth2 password flow whose token URL
is the app's own, and public operations (`security: []`)."""

from __future__ import annotations

import copy
from typing import Any

_OK = {"200": {"description": "Successful Response"}}
_422 = {
    "422": {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    }
}
_ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def fastapi_doc() -> dict[str, Any]:
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {"title": "Items API", "version": "0.1.0"},
            "security": [{"APIKeyHeader": []}],
            "paths": {
                "/health": {"get": {"security": [], "responses": _OK}},
                # OAuth2PasswordRequestForm: a form body, not validated beyond its type
                "/token": {
                    "post": {
                        "security": [],
                        "operationId": "login_token_post",
                        "requestBody": {
                            "required": True,
                            "content": {
                                "application/x-www-form-urlencoded": {
                                    "schema": {"$ref": "#/components/schemas/Body_login"}
                                }
                            },
                        },
                        "responses": {**_OK, **_422},
                    }
                },
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
                    "Body_login": {
                        "type": "object",
                        "required": ["username", "password"],
                        "properties": {
                            "username": {"type": "string", "title": "Username"},
                            "password": {"type": "string", "title": "Password"},
                            "scope": {"type": "string", "default": ""},
                        },
                    },
                    "HTTPValidationError": {
                        "type": "object",
                        "properties": {
                            "detail": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/ValidationError"},
                            }
                        },
                    },
                    "ValidationError": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                            },
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                    "Item": {
                        "type": "object",
                        "required": ["name", "price"],
                        "properties": {
                            "name": {"type": "string", "title": "Name"},
                            "price": {"type": "number", "title": "Price"},
                            "tags": {
                                "anyOf": [
                                    {"type": "array", "items": {"type": "string"}},
                                    {"type": "null"},
                                ],
                                "title": "Tags",
                            },
                        },
                    },
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
