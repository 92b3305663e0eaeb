"""What the model resources share when they reach the warm encoder service (bentos/encoder): its
address and token, and one HTTP client per resource made on first use and closed after the
run. Without ``service_url`` a resource runs the same model code in the run process."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from kb_platform.encoder_service.client import EncoderClient
from kb_platform.structured_logs import run_request_id


class EncoderServiceResource(ConfigurableResource):
    service_url: str | None = None  # e.g. http://kb-encoder:3000; unset: in process
    service_token: str | None = None  # EnvVar("KB_ENCODER_TOKEN") where a service is used
    timeout_s: float = 120.0

    _client: EncoderClient | None = PrivateAttr(default=None)
    _request_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._request_id = run_request_id(context)  # sent with each call, in the service's logs

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _service(self) -> EncoderClient:
        """The service's client, made on first use (in a run or outside one)."""
        if self._client is None:
            assert self.service_url
            self._client = EncoderClient(
                self.service_url,
                self.service_token,
                timeout_s=self.timeout_s,
                request_id=self._request_id,
            )
        return self._client
