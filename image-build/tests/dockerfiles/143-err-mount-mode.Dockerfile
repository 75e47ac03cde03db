FROM alpine
RUN --mount=type=cache,target=/c,mode=0999 true
