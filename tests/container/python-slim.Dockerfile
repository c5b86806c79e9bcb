# Stand-in for Docker Hub's python:3.11-slim, which this sandbox cannot pull: Debian bookworm's own
# Python 3.11 on a debootstrapped minbase, tagged with the Docker Hub name so the project's Dockerfile
# builds unchanged. It answers the same `python` and `python -m venv`; the interpreter lives in
# /usr/bin instead of /usr/local/bin, which the Dockerfile never names.
FROM localhost/housing-serving/bookworm:minbase
ENV LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# This sandbox reaches PyPI through a TLS-intercepting proxy whose CA only the host trusts.
COPY host-ca.crt /etc/ssl/certs/host-ca.crt
COPY pip.conf /etc/pip.conf
CMD ["python3"]
