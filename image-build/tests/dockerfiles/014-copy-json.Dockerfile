FROM alpine
COPY ["with space.txt", "/dst dir/"]
