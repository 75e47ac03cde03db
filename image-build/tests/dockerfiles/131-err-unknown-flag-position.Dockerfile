FROM alpine
RUN echo a \
 && b
    RUN --privileged x
