package main

import "errors"

func serveCmd(args []string) error { return errors.New("serve: not wired yet") }

func benchCmd(args []string) error { return errors.New("bench: not wired yet") }
