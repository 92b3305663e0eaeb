"""Elasticsearch client resource: made when a step starts, closed when it ends."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from elasticsearch import Elasticsearch
from pydantic import Field, PrivateAttr

from kb_platform.index.client import elasticsearch_client
from kb_platform.index.mapping import IndexNames
from kb_platform.structured_logs import run_request_id


class ElasticsearchResource(ConfigurableResource):
    url: str = Field(description="http(s)://host:port of the cluster")
    api_key: str | None = Field(default=None, description="pass as EnvVar; none on loopback")
    request_timeout_s: float = 30.0
    max_retries: int = 3
    index_base: str = Field(default="kb-chunks", description="chunk index family name")
    replicas: int = Field(default=0, description="replicas of each chunk index")

    _client: Elasticsearch | None = PrivateAttr(default=None)

    def make_client(self, opaque_id: str | None = None) -> Elasticsearch:
        """``opaque_id``: the run's request id, in Elasticsearch's slow logs and tasks."""
        return elasticsearch_client(
            self.url,
            api_key=self.api_key,
            request_timeout=self.request_timeout_s,
            max_retries=self.max_retries,
            retry_on_timeout=True,
            opaque_id=opaque_id,
        )

    @property
    def names(self) -> IndexNames:
        return IndexNames(self.index_base)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._client = self.make_client(run_request_id(context))

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Elasticsearch:
        if self._client is None:
            raise RuntimeError(
                "ElasticsearchResource used outside a run; call make_client() instead"
            )
        return self._client
