FROM alpine
RUN echo a \
# comment inside
    && echo b \

    && echo c
