FROM alpine
RUN ["echo", 'single']
CMD ["a", 1]
ENTRYPOINT [oops
