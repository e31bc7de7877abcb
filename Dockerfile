# CPU image that runs `discopatch serve` on a mounted detector and database folder.
# UNTESTED: no container engine could build it where it was written (see README, "Run it in a container").
#   docker build -t discopatch .
#   docker run -p 8000:8000 -v "$PWD/model:/model:ro" -v "$PWD/data:/data" -e DISCOPATCH_TOKEN=secret discopatch
FROM python:3.12-slim

# The CPU-only PyTorch wheel (PyTorch's documented index): no CUDA libraries in the image.
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/discopatch
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir ".[serve,onnx,postgres]" && rm -rf /opt/discopatch/src

# Not root; /data must be writable by uid 1000 (chown the host folder, or pass --user).
RUN useradd --uid 1000 --create-home discopatch && mkdir -p /data && chown discopatch /data
USER discopatch
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["discopatch"]
# Listening on all interfaces inside the container: set DISCOPATCH_TOKEN so POSTs need a bearer token.
CMD ["serve", "/model", "--db", "sqlite:////data/monitor.db", "--host", "0.0.0.0", "--port", "8000"]
