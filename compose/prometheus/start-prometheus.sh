#!/bin/sh
# Prometheus reads secrets from files, never from its config: the admin key and Flower's login go to files under
# /tmp/arena (the image runs as nobody), and the Flower user into a copy of the config.
set -eu
mkdir -p /tmp/arena
printf %s "$API_KEY" > /tmp/arena/api_key
printf %s "${FLOWER_BASIC_AUTH#*:}" > /tmp/arena/flower_password
sed "s/@FLOWER_USER@/${FLOWER_BASIC_AUTH%%:*}/" /etc/prometheus/arena.yml > /tmp/arena/prometheus.yml
exec /bin/prometheus --config.file=/tmp/arena/prometheus.yml --storage.tsdb.path=/prometheus
