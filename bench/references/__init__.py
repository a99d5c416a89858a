"""The yardsticks pixelgate's pixel is compared with: nginx's empty_gif
(nginx.conf.template), and two apps on the same granian and uvloop as `pixelgate serve`."""
