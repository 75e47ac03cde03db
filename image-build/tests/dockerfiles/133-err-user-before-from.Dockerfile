ARG A
USER root
FROM alpine
