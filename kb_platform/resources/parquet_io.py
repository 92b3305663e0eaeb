"""Table assets (Arrow tables) stored as Parquet, locally or on S3, one file per partition."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext
from pyarrow import fs


class ParquetIOManager(ConfigurableIOManager):
    """``<base_uri>/<asset key>/<partition>.parquet``; ``base_uri`` a folder or ``s3://bucket/prefix``."""

    base_uri: str

    def _filesystem(self) -> tuple[fs.FileSystem, str]:
        filesystem, root = fs.FileSystem.from_uri(self.base_uri)
        return filesystem, root.rstrip("/")

    def path(self, asset_key_path: list[str], partition: str | None) -> str:
        _, root = self._filesystem()
        return "/".join([root, *asset_key_path, f"{partition or 'all'}.parquet"])

    def handle_output(self, context: OutputContext, obj: pa.Table) -> None:
        filesystem, _ = self._filesystem()
        partition = context.partition_key if context.has_asset_partitions else None
        path = self.path(list(context.asset_key.path), partition)
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(obj, path, filesystem=filesystem, compression="zstd")
        context.add_output_metadata({"rows": obj.num_rows, "path": path})

    def load_input(self, context: InputContext) -> pa.Table:
        filesystem, _ = self._filesystem()
        key = list(context.asset_key.path)
        if not context.has_asset_partitions:
            return pq.read_table(self.path(key, None), filesystem=filesystem)
        tables = [
            pq.read_table(self.path(key, partition), filesystem=filesystem)
            for partition in context.asset_partition_keys
            if filesystem.get_file_info(self.path(key, partition)).type == fs.FileType.File
        ]
        return pa.concat_tables(tables) if tables else pa.table({})
