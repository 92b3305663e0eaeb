"""Chunks into Elasticsearch: per-document upserts, versioned roll-outs, deletes, checks."""

from dagster import Definitions

from kb_platform.defs.search.delete_documents import delete_documents
from kb_platform.defs.search.index_version import (
    index_counts_match_stored,
    knn_recall_vs_exact,
    search_index_version,
)
from kb_platform.defs.search.search_index import search_index, search_index_matches_stored_chunks

defs = Definitions(
    assets=[search_index, search_index_version],
    asset_checks=[
        search_index_matches_stored_chunks,
        index_counts_match_stored,
        knn_recall_vs_exact,
    ],
    jobs=[delete_documents],
)
