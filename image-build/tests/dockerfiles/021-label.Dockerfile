FROM alpine
LABEL a=b "c d"="e f" version=1.0
LABEL maintainer someone@example.com
