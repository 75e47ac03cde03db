FROM alpine
RUN --mount=type=secret,required true
