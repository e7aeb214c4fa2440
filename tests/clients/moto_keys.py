"""Turns on signature checking in a moto server started with INITIAL_NO_AUTH_ACTION_COUNT=3.

moto accepts any signature for its first N calls, then verifies SigV4 (botocore's rules) against
its IAM users. This spends the three free calls on an IAM user, its access key and an `s3:*`
policy, and prints "ACCESS_KEY_ID SECRET_ACCESS_KEY" for shardcache's upstream credentials.
Then it checks that a wrong secret is refused, so a suite never runs against an upstream that
accepts anything.

Usage: moto_keys.py MOTO_ENDPOINT
"""
import json
import sys

import boto3
from botocore.exceptions import ClientError

endpoint = sys.argv[1]


def client(service, key, secret):
    return boto3.client(
        service, endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1"
    )


iam = client("iam", "bootstrap", "bootstrap")
iam.create_user(UserName="shardcache")
key = iam.create_access_key(UserName="shardcache")["AccessKey"]
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName="shardcache", PolicyName="s3-all", PolicyDocument=json.dumps(policy))

try:
    client("s3", key["AccessKeyId"], "not-the-secret").list_buckets()
    sys.exit("moto accepted a wrong secret: it is not checking signatures")
except ClientError as e:
    assert e.response["Error"]["Code"] == "SignatureDoesNotMatch", e.response["Error"]
print(key["AccessKeyId"], key["SecretAccessKey"])
