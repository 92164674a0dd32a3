# OpenMSS service image: one process runs SMTP, submission and HTTP (IMAP and webmail to come).
FROM python:3.11-slim
RUN useradd --system --home /var/lib/openmss --create-home openmss
WORKDIR /opt/openmss
COPY pyproject.toml README.md ./
COPY openmss ./openmss
COPY mailserver ./mailserver
COPY directory ./directory
COPY dossier_bridge ./dossier_bridge
COPY webmail ./webmail
RUN pip install --no-cache-dir .
USER openmss
ENV OPENMSS_DATA_DIR=/var/lib/openmss OPENMSS_LISTEN_HOST=0.0.0.0 OPENMSS_LOG_FORMAT=json
EXPOSE 2525 2587 2465 2143 2993 8080
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('https://127.0.0.1:8080/healthz', timeout=2, context=__import__('ssl')._create_unverified_context())" || exit 1
ENTRYPOINT ["openmss"]
CMD ["serve"]
