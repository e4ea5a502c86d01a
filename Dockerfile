# The image the Kubernetes manifests run (auditsvc:0.1.0).
# Build: docker build -t auditsvc:0.1.0 .
# Not built in CI here (no container engine on these machines); the Python
# packages it installs are the ones `make test` installs and tests.
FROM python:3.11-slim AS build
WORKDIR /src
COPY clients/ clients/
COPY auditsvc/ auditsvc/
COPY pyproject.toml README.md ./
# One resolve for both: auditsvc's auditsvc-client==0.1.0 is satisfied by ./clients.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./clients .

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin auditsvc
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels auditsvc && rm -rf /wheels
USER 10001
# Bytecode goes nowhere: the root filesystem is read-only in the Deployment.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 50051 9464
ENTRYPOINT ["auditsvc"]
CMD ["serve"]
