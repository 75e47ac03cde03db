FROM alpine
ENTRYPOINT ["/entry.sh"]
ENTRYPOINT exec top -b
