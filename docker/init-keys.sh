#!/bin/sh
# First start of docker-compose.yml (service `keys`): make the Ed25519 pairs that do not
# exist yet, never overwrite one (`holdgate keys generate` refuses to anyway). Each
# private key lands only in the folder (volume) of whoever signs with it:
#   ROOT/worker/worker.key    the worker: signs verdicts              volume worker-keys
#   ROOT/admin/operator.key   operator: revoke / suspend (cli)        volume admin-keys
#   ROOT/admin/approver.key   the demo's human approver (cli)         volume admin-keys
#   ROOT/public/<name>.pub    every public key, for whoever verifies   volume public-keys
# ROOT is /keys in the image; the tests run this script on a temporary folder.
set -eu
root=${1:-/keys}
umask 077
mkdir -p "$root/worker" "$root/admin" "$root/public"
chmod 755 "$root/public"

pair() {  # pair FOLDER NAME
  if [ ! -f "$root/$1/$2.key" ]; then
    holdgate keys generate --dir "$root/$1" --name "$2"
  fi
  cp "$root/$1/$2.pub" "$root/public/$2.pub"
  chmod 644 "$root/public/$2.pub"
}

pair worker worker
pair admin operator
pair admin approver
echo "key ids in $root/public:"
holdgate keys show "$root/public"
