# foo=bar
# escape=`
FROM alpine
