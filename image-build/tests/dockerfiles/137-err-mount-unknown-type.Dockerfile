FROM alpine
RUN --mount=type=volume,target=/v true
