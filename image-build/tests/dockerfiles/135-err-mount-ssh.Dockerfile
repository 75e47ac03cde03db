FROM alpine
RUN --mount=type=ssh ssh -T git@example.com
