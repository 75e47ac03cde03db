FROM alpine
ADD --keep-git-dir=true https://github.com/x/y.git#v1 /src
ADD --checksum=sha256:abc https://example.com/f.tgz /f.tgz
ADD --chown=1 --chmod=644 --link --exclude=x a.tar.gz /
