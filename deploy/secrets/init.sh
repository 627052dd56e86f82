#!/bin/sh
# Makes the secret files docker-compose.yml and deploy/docker-compose.scale.yml
# read (Compose `secrets:`), in deploy/secrets/. Never overwrites a file that
# exists, so running it again only fills in what is missing, and sets owner
# and mode on every secret file there each time it runs: run it again after
# writing the two files that are yours to fill in.
#
#   sh deploy/secrets/init.sh
#
# Made here, at random:
#   secure_key           the app's SECURE_KEY (32 random bytes, hex)
#   mongo_root_password  MongoDB's root user (used by its health check only)
#   mongo_keyfile        the replica set's internal authentication key
#   mongodb_uri          the app's connection string, as the app user
#                        `socialos` with its own random password; MongoDB's
#                        init script creates that user from this very string
# Yours to fill in (for `docker compose up`'s app; the dev profile needs none):
#   socialos_admin_password   the Social OS admin API password
#   pusher_secret             the Pusher app's secret
#
# Every secret file ends up mode 0600, whoever made it and with whatever
# umask. The app runs as uid 10001: when this script runs as root it hands
# the app's four files to that uid (the database's two are left to whoever
# made them: the mongo service copies what it needs as root); run as another
# user it says what to run as root.
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
umask 077

random_hex() {  # $1 bytes of randomness, as hex
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

put() {  # put NAME VALUE: write it unless it exists
    if [ -e "$dir/$1" ]; then
        echo "kept    deploy/secrets/$1"
    else
        printf '%s\n' "$2" > "$dir/$1"
        echo "made    deploy/secrets/$1"
    fi
}

put secure_key "$(random_hex 32)"
put mongo_root_password "$(random_hex 24)"
put mongo_keyfile "$(head -c 756 /dev/urandom | base64 | tr -d '\n')"
put mongodb_uri "mongodb://socialos:$(random_hex 24)@mongo:27017/socialos?replicaSet=rs0&w=majority&readPreference=primary"
for name in socialos_admin_password pusher_secret; do
    if [ ! -s "$dir/$name" ]; then
        echo "missing deploy/secrets/$name: write it yourself (printf '%s' 'VALUE' > deploy/secrets/$name)"
    fi
done

app_files="secure_key mongodb_uri socialos_admin_password pusher_secret"
all_files="$app_files mongo_root_password mongo_keyfile"
for name in $all_files; do
    if [ -e "$dir/$name" ]; then chmod 0600 "$dir/$name"; fi
done
if [ "$(id -u)" = 0 ]; then
    for name in $app_files; do
        if [ -e "$dir/$name" ]; then chown 10001:10001 "$dir/$name"; fi
    done
else
    echo "note: the app (uid 10001) must be able to read its files; as root, run:"
    echo "      chown 10001:10001 $(for n in $app_files; do printf 'deploy/secrets/%s ' "$n"; done)"
fi
