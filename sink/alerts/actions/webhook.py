"""The webhook action: each alert POSTed as JSON."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.plugins import ACTIONS
from common.redact import redact_text
from common.settings import ActionSettings
from common.wire import Alert
from sink.alerts.actions.base import DeliveryError

_TRANSIENT_HTTP = frozenset({408, 429})


class WebhookActionConfig(ActionSettings):
    """HTTP POST of the alert as JSON."""

    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://", description="http:// or https:// URL the alert is POSTed to.")
    timeout_s: float = Field(5.0, gt=0, le=300, description="Timeout of one request.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (e.g. Authorization).")


class WebhookAction:
    """POSTs the alert as JSON; 2xx is delivered, 5xx/408/429 and network errors are transient, other 4xx not."""

    def __init__(self, name: str, cfg: WebhookActionConfig) -> None:
        self.name = name
        self._cfg = cfg
        import httpx  # here: every process imports the plug-in modules (discovery), only an alert sink posts

        # Credentials in the URL never reach messages or logs; header values are never shown at all.
        self._shown_url = str(httpx.URL(cfg.url).copy_with(username=None, password=None))
        self._client = httpx.Client(timeout=cfg.timeout_s)

    def deliver(self, alert: Alert) -> None:
        import httpx

        where = f"webhook {self.name!r} POST {self._shown_url}"
        try:
            response = self._client.post(self._cfg.url, json=alert.model_dump(mode="json"), headers=self._cfg.headers)
        except httpx.TimeoutException:
            raise DeliveryError(f"{where}: no answer within {self._cfg.timeout_s} s", transient=True) from None
        except httpx.TransportError as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {redact_text(str(exc))}", transient=True) from None
        if response.is_success:
            return
        status = response.status_code
        body = response.text.strip()
        for secret in self._cfg.headers.values():
            if len(secret) >= 4:  # an endpoint that echoes the request must not put its token in our messages
                body = body.replace(secret, "***")
        body = body[:200]
        raise DeliveryError(
            f"{where}: HTTP {status} {response.reason_phrase}" + (f": {body}" if body else ""),
            transient=status >= 500 or status in _TRANSIENT_HTTP,
        )

    def close(self) -> None:
        self._client.close()


ACTIONS.register(WebhookActionConfig, lambda name, cfg, _fetch: WebhookAction(name, cfg))
