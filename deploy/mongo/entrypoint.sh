#!/bin/bash
# The mongo service's entrypoint: mongod insists that its replica-set keyFile
# is owned by the user it runs as and readable by no one else, which a
# bind-mounted Compose secret can't promise. So, as root, copy the keyFile
# (and the app's connection string, read once by the init script that creates
# the app's user) into this container's /tmp (a tmpfs) with that ownership,
# then hand over to the image's own entrypoint, which drops to `mongodb`.
set -euo pipefail

dir=/tmp/socialos
install -d -m 700 -o mongodb -g mongodb "$dir"
install -m 400 -o mongodb -g mongodb /run/secrets/mongo_keyfile "$dir/keyfile"
if [ -e /run/secrets/mongodb_uri ]; then
    install -m 400 -o mongodb -g mongodb /run/secrets/mongodb_uri "$dir/mongodb_uri"
fi
exec docker-entrypoint.sh "$@"
