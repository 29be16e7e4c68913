# A server image with plugin packages installed (docs/plugins.md, "In Docker"). Build it from a folder of wheels:
#   docker build -f docker/plugins.Dockerfile -t my-zmqproc-server [--build-arg BASE=zmqproc-server] WHEELS_DIR
# WHEELS_DIR holds your plugin package's wheel and those of its requirements (`pip wheel . -w WHEELS_DIR` on a machine
# with PyPI); every *.whl there is installed, offline. A package declares its ops with the `zmqproc.ops` entry point.
ARG BASE=zmqproc-server
FROM ${BASE}
USER root
COPY *.whl /tmp/plugin-wheels/
# The image ships without pip: it comes back for this step only.
RUN /opt/zmqproc/bin/python -m ensurepip --default-pip > /dev/null \
    && /opt/zmqproc/bin/python -m pip install --quiet --no-index --no-cache-dir --find-links /tmp/plugin-wheels /tmp/plugin-wheels/*.whl \
    && /opt/zmqproc/bin/python -m pip uninstall --quiet --yes pip \
    && rm -rf /tmp/plugin-wheels
USER zmqproc
