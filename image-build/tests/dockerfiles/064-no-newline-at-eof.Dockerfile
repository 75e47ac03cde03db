FROM alpine
RUN true