FROM alpine
RUNN echo
