"""The blob store on S3 (production)."""

from __future__ import annotations

from dagster_aws.s3 import S3Resource

from kb_platform.resources.blob_store import BlobStore


class S3BlobStore(BlobStore):
    s3: S3Resource
    bucket: str
    prefix: str = "blobs"

    def _key(self, key: str) -> str:
        return f"{self.prefix.rstrip('/')}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.s3.get_client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        response = self.s3.get_client().get_object(Bucket=self.bucket, Key=self._key(key))
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.get_client().head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"
