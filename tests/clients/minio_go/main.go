// minio-go through shardcache. Over plain HTTP minio-go signs every upload chunk by chunk
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), and with trailing headers on it ends each part with a
// signed CRC32C trailer (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER): shardcache verifies the
// chunks and forwards the body under its own signature.
//
// Usage: minio_go HOST:PORT BUCKET (keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func client(endpoint, secret string, trailers bool) *minio.Client {
	c, err := minio.New(endpoint, &minio.Options{
		Creds:           credentials.NewStaticV4(os.Getenv("AWS_ACCESS_KEY_ID"), secret, ""),
		Secure:          false,
		Region:          "us-east-1",
		BucketLookup:    minio.BucketLookupPath,
		TrailingHeaders: trailers,
	})
	check(err, "client")
	return c
}

func check(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "minio-go: %s: %v\n", what, err)
		os.Exit(1)
	}
}

func main() {
	endpoint, bucket := os.Args[1], os.Args[2]
	secret := os.Getenv("AWS_SECRET_ACCESS_KEY")
	ctx := context.Background()
	plain := client(endpoint, secret, false)
	trailing := client(endpoint, secret, true)
	check(plain.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"}), "make bucket")

	rng := rand.New(rand.NewSource(7))
	cases := []struct {
		name string
		c    *minio.Client
		size int
		part uint64
	}{
		{"one-request", plain, 3<<20 + 7, 0},
		{"empty", plain, 0, 0},
		{"multipart", plain, 11<<20 + 3, 5 << 20},
		{"multipart-crc32c-trailer", trailing, 11<<20 + 5, 5 << 20},
	}
	for _, tc := range cases {
		data := make([]byte, tc.size)
		rng.Read(data)
		opts := minio.PutObjectOptions{PartSize: tc.part}
		_, err := tc.c.PutObject(ctx, bucket, tc.name, bytes.NewReader(data), int64(len(data)), opts)
		check(err, "put "+tc.name)
		obj, err := plain.GetObject(ctx, bucket, tc.name, minio.GetObjectOptions{})
		check(err, "get "+tc.name)
		got, err := io.ReadAll(obj)
		check(err, "read "+tc.name)
		if !bytes.Equal(got, data) {
			check(fmt.Errorf("read %d bytes, not the %d written", len(got), len(data)), tc.name)
		}
	}

	// A wrong secret fails the seed signature: nothing is written.
	wrong := client(endpoint, "not-the-secret", false)
	_, err := wrong.PutObject(ctx, bucket, "forged", strings.NewReader("forged"), 6, minio.PutObjectOptions{})
	if err == nil || minio.ToErrorResponse(err).Code != "SignatureDoesNotMatch" {
		check(fmt.Errorf("a forged upload answered %v", err), "forged")
	}
	if _, err := plain.StatObject(ctx, bucket, "forged", minio.StatObjectOptions{}); err == nil {
		check(fmt.Errorf("the forged object exists"), "forged")
	}
	fmt.Println("minio-go: chunk-signed put (one request, empty, multipart, multipart with signed trailers), get, forged upload refused: ok")
}
