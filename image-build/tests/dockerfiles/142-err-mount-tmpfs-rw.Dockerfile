FROM alpine
RUN --mount=type=tmpfs,target=/t,rw true
