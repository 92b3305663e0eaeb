"""The metadata of an asset's latest materialization, read by the gates and promotions that
judge a checkpoint after its asset has run."""

from collections.abc import Mapping

from dagster import AssetKey, Failure, MetadataValue
from dagster._core.instance import DagsterInstance


def latest_metadata(instance: DagsterInstance, key: AssetKey) -> Mapping[str, MetadataValue]:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise Failure(f"{key.to_user_string()} has not been materialized")
    return event.asset_materialization.metadata
