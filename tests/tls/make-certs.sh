#!/usr/bin/env bash
# Regenerates the test TLS fixtures: a CA, and two server certificates it signed for 127.0.0.1
# and localhost (the second proves a reload: same names, another serial). Valid for 100 years;
# test use only, never deploy these keys.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
    -subj "/CN=shardcache test CA" -keyout ca.key -out ca.pem 2>/dev/null
for n in 1 2; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=shardcache test $n" \
        -keyout server$n.key -out server$n.csr 2>/dev/null
    openssl x509 -req -in server$n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
        -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n') \
        -out server$n.pem 2>/dev/null
    rm server$n.csr
done
rm -f ca.srl ca.key
