#!/usr/bin/env bash
# Makes the webhook's certificate and a ready-to-apply copy of webhook.yaml.
#
#   examples/webhook/make-certs.sh DIR
#
# writes into DIR (created if missing): ca.crt and ca.key (a CA of its own, 10 years),
# tls.crt and tls.key (the serving certificate for the Service kubexit-webhook.kubexit.svc,
# signed by that CA), and webhook.yaml with the Secret's data and the caBundle filled in.
# Needs only openssl and base64. Keep ca.key private, or delete it: it is only needed to
# sign a new serving certificate.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
out=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
service=kubexit-webhook
namespace=kubexit
mkdir -p "$out"
umask 077

openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kubexit-webhook-ca" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$service.$namespace.svc" \
    -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\n' \
    "$service" "$service" "$namespace" "$service" "$namespace" "$service" "$namespace" \
    > "$out/tls.ext"
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days 825 -extfile "$out/tls.ext" -out "$out/tls.crt" 2>/dev/null
rm -f "$out/tls.csr" "$out/tls.ext" "$out/ca.srl"

b64() { base64 < "$1" | tr -d '\n'; }
sed -e "s|CA_BUNDLE|$(b64 "$out/ca.crt")|" -e "s|TLS_CRT|$(b64 "$out/tls.crt")|" \
    -e "s|TLS_KEY|$(b64 "$out/tls.key")|" "$here/webhook.yaml" > "$out/webhook.yaml"
echo "wrote $out/webhook.yaml; apply it with: kubectl apply -f $out/webhook.yaml"
