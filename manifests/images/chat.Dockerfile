# The Gradio chat front end (chat/). Build from the repository root:
#   docker build -f manifests/images/chat.Dockerfile -t REGISTRY/wis-chat:TAG .
FROM docker.io/library/python:3.12.8-slim-bookworm
WORKDIR /app
COPY chat/ /app/
RUN pip install --no-cache-dir -r /app/requirements.txt \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin chat
USER 10001:10001
EXPOSE 7860
ENV WIS_CHAT_HOST=0.0.0.0 WIS_CHAT_PORT=7860 GRADIO_ANALYTICS_ENABLED=False
ENTRYPOINT ["python", "/app/app.py"]
