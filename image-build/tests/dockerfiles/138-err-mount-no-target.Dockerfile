FROM alpine
RUN --mount=type=cache,id=c true
