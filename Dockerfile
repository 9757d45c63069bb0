# triggerd's container image: a static binary on Alpine, run as a user
# without privileges. Build: docker build -t triggerd .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/triggerd .

FROM alpine:3.22
RUN adduser -D -H -u 10001 triggerd \
 && mkdir -p /var/lib/triggerd/storage /etc/triggerd \
 && chown triggerd /var/lib/triggerd/storage
COPY --from=build /out/triggerd /usr/local/bin/triggerd
COPY deploy/triggerd.yaml /etc/triggerd/triggerd.yaml
USER triggerd
ENV TRIGGERD_CONFIG=/etc/triggerd/triggerd.yaml
EXPOSE 4122
# Ready once the store answers with its schema up to date (GET /readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD wget -q -O /dev/null http://127.0.0.1:4122/readyz || exit 1
ENTRYPOINT ["triggerd"]
CMD ["serve", "--log-format", "json"]
