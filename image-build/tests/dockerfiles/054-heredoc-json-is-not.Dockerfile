FROM alpine
RUN ["echo", "<<EOF"]
