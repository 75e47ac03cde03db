FROM alpine
RUN --mount=type=bind,target=/a,rw=maybe true
