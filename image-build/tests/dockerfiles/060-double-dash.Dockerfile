FROM alpine
RUN -- --weird-command
