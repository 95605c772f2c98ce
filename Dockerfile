# kubexit's image: carries kubexit.pyz at /usr/local/bin/kubexit so that an init container can
# copy it into an emptyDir shared with containers that have Python 3.8+ (the side-load pattern),
# or a Dockerfile can take it with COPY --from. kubexit runs on the app image's own python3
# (shebang "#!/usr/bin/env python3"); the base only needs `cp` for the side-load.
#
#   python3 build_zipapp.py && docker build -t kubexit:latest .
#
# BASE can be any image with python3 and cp; the end-to-end suite builds it on a locally made
# Debian image (tests/e2e/run.sh).
ARG BASE=python:3.12-slim
FROM ${BASE}

LABEL org.opencontainers.image.title="kubexit" \
      org.opencontainers.image.description="Command supervisor for coordinated start-up and termination of containers in a Kubernetes pod"

COPY dist/kubexit.pyz /usr/local/bin/kubexit
RUN chmod 0755 /usr/local/bin/kubexit && /usr/local/bin/kubexit --version

CMD ["/usr/local/bin/kubexit", "--help"]
