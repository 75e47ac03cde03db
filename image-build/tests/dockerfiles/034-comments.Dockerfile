# a comment
FROM alpine
   # indented comment
RUN echo a # not a comment


# trailing
