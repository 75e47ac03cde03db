FROM alpine
COPY --chown=a --chown=b x y
