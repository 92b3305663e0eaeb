"""Asset checks that run per document partition."""

import logging
import warnings
from collections.abc import Callable
from typing import Any

from dagster import AssetChecksDefinition, PreviewWarning, asset_check

from kb_platform.defs.ingestion.partitions import documents_partitions

log = logging.getLogger(__name__)


def per_document_check(**kwargs: Any) -> Callable[[Callable], AssetChecksDefinition]:
    """``@asset_check`` over the document partitions, so a failed check belongs to one document.

    Partitioned checks are a Dagster preview feature, used knowingly; its PreviewWarning goes
    to the debug log rather than to every terminal that loads the code location.
    """

    def decorate(fn: Callable) -> AssetChecksDefinition:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check = asset_check(partitions_def=documents_partitions, **kwargs)(fn)
        for warning in caught:
            if issubclass(warning.category, PreviewWarning):
                log.debug("%s: %s", fn.__name__, warning.message)
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        return check

    return decorate
