"""Any S3-compatible endpoint through boto3 (sigv4, path-style by default): objects in one bucket, and
presigned requests for per-job scoped access (see oasis.edp.access)."""
from __future__ import annotations

from typing import Any

from oasis.storage.base import ObjectInfo, ObjectNotFound, StoreError

# boto3 and botocore are imported where they are used (lazy for start-up: they take a third of a second, and most
# processes and commands never reach S3).


def client(endpoint: str | None, access_key: str, secret_key: str, *, region: str = "us-east-1",
           path_style: bool = True, verify: bool | str = True) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name=region, verify=verify,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path" if path_style else "virtual"},
                      retries={"max_attempts": 3, "mode": "standard"}))


def _error(e: Exception, what: str) -> StoreError:
    """botocore's messages name the operation and the code, never the secret; keep only those."""
    response = getattr(e, "response", None) or {}
    code = (response.get("Error") or {}).get("Code", type(e).__name__)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return StoreError(f"S3 {what}: {code}", status)


class S3Store:
    """One bucket of an S3-compatible service as an ObjectStore."""

    kind = "s3"

    def __init__(self, s3: Any, bucket: str, create: bool = True) -> None:
        self.s3, self.bucket = s3, bucket
        if create:
            self.ensure_bucket()

    def __repr__(self) -> str:
        return f"S3Store({self.s3.meta.endpoint_url!r}, bucket={self.bucket!r})"

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.s3.create_bucket(Bucket=self.bucket)
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise _error(e, f"create bucket {self.bucket}") from None

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as e:
            raise _error(e, f"PUT {key}") from None

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            raise _error(e, f"GET {key}") from None
        except BotoCoreError as e:
            raise _error(e, f"GET {key}") from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            raise _error(e, f"DELETE {key}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _error(e, f"HEAD {key}") from None
        except BotoCoreError as e:
            raise _error(e, f"HEAD {key}") from None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        from botocore.exceptions import BotoCoreError, ClientError
        found = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [ObjectInfo(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return []
            raise _error(e, f"list {prefix}") from None
        except BotoCoreError as e:
            raise _error(e, f"list {prefix}") from None
        return found

    def presign(self, method: str, key: str, expires_in: int) -> str:
        op = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object"}[method]
        return self.s3.generate_presigned_url(op, Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in)
