// Command conformanceserver is the upstream that test/conformance runs the MCP
// conformance suite (npm @modelcontextprotocol/conformance 0.1.13, pinned in
// testdata/package.json) against, directly and behind Moat.
//
// The suite's server scenarios test fixed names (test_simple_text,
// test://static-text, test_simple_prompt, ...) that belong to the conformance
// repository's reference server, which the npm package does not ship. This
// server implements them, each as the scenario's "Server Implementation
// Requirements" say (printed by `conformance server --scenario X` when X
// fails, and read from the suite's dist/index.js for the exact checks):
//
//   - tools: test_simple_text, test_image_content, test_audio_content,
//     test_embedded_resource, test_multiple_content_types,
//     test_tool_with_logging, test_tool_with_progress, test_error_handling,
//     test_sampling, test_elicitation, test_elicitation_sep1034_defaults,
//     test_elicitation_sep1330_enums, json_schema_2020_12_tool and
//     test_reconnection;
//   - resources test://static-text, test://static-binary and
//     test://watched-resource (subscribable), the template
//     test://template/{id}/data;
//   - prompts test_simple_prompt, test_prompt_with_arguments,
//     test_prompt_with_embedded_resource and test_prompt_with_image;
//   - completion/complete (values for the arguments of
//     test_prompt_with_arguments), logging/setLevel and ping.
//
// It speaks stdio only (the suite reaches it through a stdio→HTTP bridge,
// supergateway, exactly as it reaches Moat) and writes nothing but MCP to
// stdout. What no stdio server can do is left to the bridge: closing an SSE
// stream mid-call (test_reconnection just answers) and checking Host/Origin
// headers (dns-rebinding-protection).
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The smallest media the scenarios accept: a 1x1 red PNG and a WAV file of
// one silent sample.
const (
	pngBase64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
	wavBase64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
)

var pngData, wavData = mustDecode(pngBase64), mustDecode(wavBase64)

func mustDecode(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// noArgs is the input schema of every tool that takes no arguments.
const noArgs = `{"type":"object","properties":{}}`

// step is the pause the logging and progress scenarios ask for between
// notifications ("after ~50ms").
const step = 50 * time.Millisecond

func main() {
	log.SetFlags(0)
	log.SetPrefix("conformanceserver: ")
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: conformanceserver (takes no arguments; speaks MCP on stdio)")
		os.Exit(2)
	}
	srv := mcp.NewServer(&mcp.Implementation{Name: "moat-conformance-fixture", Version: "1.0.0"}, &mcp.ServerOptions{
		CompletionHandler:  complete,
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	addTools(srv)
	addResources(srv)
	addPrompts(srv)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx, &mcp.StdioTransport{}); err != nil && ctx.Err() == nil {
		log.Printf("serve: %v", err)
		os.Exit(1)
	}
}

func tool(srv *mcp.Server, name, description, schema string, h mcp.ToolHandler) {
	srv.AddTool(&mcp.Tool{Name: name, Description: description, InputSchema: json.RawMessage(schema)}, h)
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func toolError(format string, a ...any) *mcp.CallToolResult {
	r := text(fmt.Sprintf(format, a...))
	r.IsError = true
	return r
}

// stringArg returns the string argument name of a call, or an error result
// naming what is wrong.
func stringArg(req *mcp.CallToolRequest, name string) (string, *mcp.CallToolResult) {
	var in map[string]any
	if len(req.Params.Arguments) > 0 {
		if err := json.Unmarshal(req.Params.Arguments, &in); err != nil {
			return "", toolError("bad arguments: %v", err)
		}
	}
	s, ok := in[name].(string)
	if !ok {
		return "", toolError("%s needs the string argument %q", req.Params.Name, name)
	}
	return s, nil
}

// pause waits d unless the call is cancelled first.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func addTools(srv *mcp.Server) {
	tool(srv, "test_simple_text", "Returns one text content item.", noArgs,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return text("This is a simple text response for testing."), nil
		})

	tool(srv, "test_image_content", "Returns one image content item (a 1x1 PNG).", noArgs,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.ImageContent{Data: pngData, MIMEType: "image/png"}}}, nil
		})

	tool(srv, "test_audio_content", "Returns one audio content item (a tiny WAV).", noArgs,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.AudioContent{Data: wavData, MIMEType: "audio/wav"}}}, nil
		})

	tool(srv, "test_embedded_resource", "Returns one embedded text resource.", noArgs,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
				URI: "test://embedded-resource", MIMEType: "text/plain", Text: "This is an embedded resource content.",
			}}}}, nil
		})

	tool(srv, "test_multiple_content_types", "Returns text, image and embedded resource content.", noArgs,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{
				&mcp.TextContent{Text: "Multiple content types test:"},
				&mcp.ImageContent{Data: pngData, MIMEType: "image/png"},
				&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
					URI: "test://mixed-content-resource", MIMEType: "application/json", Text: `{"test":"data","value":123}`,
				}},
			}}, nil
		})

	tool(srv, "test_tool_with_logging", "Sends three info log messages, 50ms apart, while it runs.", noArgs,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			for i, msg := range []string{"Tool execution started", "Tool processing data", "Tool execution completed"} {
				if i > 0 {
					if err := pause(ctx, step); err != nil {
						return nil, err
					}
				}
				if err := req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Logger: "conformance", Data: msg}); err != nil {
					return nil, fmt.Errorf("send log message: %w", err)
				}
			}
			return text("Tool with logging executed successfully"), nil
		})

	tool(srv, "test_tool_with_progress", "Reports progress 0, 50 and 100 of 100, 50ms apart, when given a progress token.", noArgs,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			tok := req.Params.GetProgressToken()
			for i, p := range []float64{0, 50, 100} {
				if i > 0 {
					if err := pause(ctx, step); err != nil {
						return nil, err
					}
				}
				if tok == nil {
					continue
				}
				err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: p, Total: 100})
				if err != nil {
					return nil, fmt.Errorf("send progress: %w", err)
				}
			}
			return text(fmt.Sprintf("Progress tool completed (token %v)", tok)), nil
		})

	tool(srv, "test_error_handling", "Always fails with a tool error (isError: true).", noArgs,
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return toolError("This tool intentionally returns an error for testing"), nil
		})

	tool(srv, "test_sampling", "Asks the client's LLM (sampling/createMessage) to answer prompt.",
		`{"type":"object","properties":{"prompt":{"type":"string","description":"The prompt to send to the LLM"}},"required":["prompt"]}`,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			prompt, bad := stringArg(req, "prompt")
			if bad != nil {
				return bad, nil
			}
			if p := req.Session.InitializeParams(); p == nil || p.Capabilities == nil || p.Capabilities.Sampling == nil {
				return toolError("the client did not declare the sampling capability"), nil
			}
			res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
				MaxTokens: 100,
				Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: prompt}}},
			})
			if err != nil {
				return toolError("sampling failed: %v", err), nil
			}
			answer := fmt.Sprintf("%v", res.Content)
			if tc, ok := res.Content.(*mcp.TextContent); ok {
				answer = tc.Text
			}
			return text("LLM response: " + answer), nil
		})

	tool(srv, "test_elicitation", "Asks the user (elicitation/create) for a username and an email address.",
		`{"type":"object","properties":{"message":{"type":"string","description":"The message to show the user"}},"required":["message"]}`,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			msg, bad := stringArg(req, "message")
			if bad != nil {
				return bad, nil
			}
			return elicit(ctx, req, "User response: ", msg, `{
				"type": "object",
				"properties": {
					"username": {"type": "string", "description": "User's response"},
					"email": {"type": "string", "description": "User's email address"}
				},
				"required": ["username", "email"]
			}`)
		})

	tool(srv, "test_elicitation_sep1034_defaults", "Elicits one field of each primitive type, each with a default (SEP-1034).", noArgs,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return elicit(ctx, req, "Elicitation completed: ", "Please review these values (each has a default)", `{
				"type": "object",
				"properties": {
					"name": {"type": "string", "description": "User name", "default": "John Doe"},
					"age": {"type": "integer", "description": "User age", "default": 30},
					"score": {"type": "number", "description": "User score", "default": 95.5},
					"status": {"type": "string", "description": "User status", "enum": ["active", "inactive", "pending"], "default": "active"},
					"verified": {"type": "boolean", "description": "Verification status", "default": true}
				}
			}`)
		})

	tool(srv, "test_elicitation_sep1330_enums", "Elicits the five enum shapes of SEP-1330.", noArgs,
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return elicit(ctx, req, "Elicitation completed: ", "Please choose from these enums", `{
				"type": "object",
				"properties": {
					"untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
					"titledSingle": {"type": "string", "oneOf": [
						{"const": "value1", "title": "First Option"},
						{"const": "value2", "title": "Second Option"},
						{"const": "value3", "title": "Third Option"}
					]},
					"legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
					"untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
					"titledMulti": {"type": "array", "items": {"anyOf": [
						{"const": "value1", "title": "First Choice"},
						{"const": "value2", "title": "Second Choice"},
						{"const": "value3", "title": "Third Choice"}
					]}}
				}
			}`)
		})

	tool(srv, "json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", `{
		"$schema": "https://json-schema.org/draft/2020-12/schema",
		"type": "object",
		"$defs": {
			"address": {
				"type": "object",
				"properties": {"street": {"type": "string"}, "city": {"type": "string"}}
			}
		},
		"properties": {
			"name": {"type": "string"},
			"address": {"$ref": "#/$defs/address"}
		},
		"additionalProperties": false
	}`, func(_ context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return text("json_schema_2020_12_tool called with " + string(req.Params.Arguments)), nil
	})

	// Over stdio the server cannot close the HTTP stream a call's answer
	// travels on; the bridge in front of it decides that. So this tool only
	// answers, after a pause in which a bridge could drop the stream.
	tool(srv, "test_reconnection", "Answers after a short pause (SEP-1699 SSE polling; the stream itself belongs to the HTTP bridge).", noArgs,
		func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			if err := pause(ctx, 2*step); err != nil {
				return nil, err
			}
			return text("Reconnection test completed successfully."), nil
		})
}

// elicit sends elicitation/create with message and schema and reports the
// answer as text after prefix.
func elicit(ctx context.Context, req *mcp.CallToolRequest, prefix, message, schema string) (*mcp.CallToolResult, error) {
	if p := req.Session.InitializeParams(); p == nil || p.Capabilities == nil || p.Capabilities.Elicitation == nil {
		return toolError("the client did not declare the elicitation capability"), nil
	}
	res, err := req.Session.Elicit(ctx, &mcp.ElicitParams{Message: message, RequestedSchema: json.RawMessage(schema)})
	if err != nil {
		return toolError("elicitation failed: %v", err), nil
	}
	content, _ := json.Marshal(res.Content)
	return text(fmt.Sprintf("%saction=%s, content=%s", prefix, res.Action, content)), nil
}

func addResources(srv *mcp.Server) {
	static := func(uri, name, description, mime, txt string, blob []byte) {
		srv.AddResource(&mcp.Resource{URI: uri, Name: name, Description: description, MIMEType: mime},
			func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
				return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: mime, Text: txt, Blob: blob}}}, nil
			})
	}
	static("test://static-text", "static-text", "A static text resource", "text/plain",
		"This is the content of the static text resource.", nil)
	static("test://static-binary", "static-binary", "A static binary resource (a 1x1 PNG)", "image/png", "", pngData)
	static("test://watched-resource", "watched-resource", "A resource clients may subscribe to", "text/plain",
		"Watched resource content", nil)

	const prefix, suffix = "test://template/", "/data"
	srv.AddResourceTemplate(&mcp.ResourceTemplate{
		URITemplate: prefix + "{id}" + suffix, Name: "template-data",
		Description: "Data for an id (parameter substitution)", MIMEType: "application/json",
	}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		uri := req.Params.URI
		id, okPrefix := strings.CutPrefix(uri, prefix)
		id, okSuffix := strings.CutSuffix(id, suffix)
		if !okPrefix || !okSuffix || id == "" || strings.Contains(id, "/") {
			return nil, mcp.ResourceNotFoundError(uri)
		}
		b, err := json.Marshal(map[string]any{"id": id, "templateTest": true, "data": "Data for ID: " + id})
		if err != nil {
			return nil, err
		}
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(b)}}}, nil
	})
}

func addPrompts(srv *mcp.Server) {
	user := func(c mcp.Content) *mcp.PromptMessage { return &mcp.PromptMessage{Role: "user", Content: c} }

	srv.AddPrompt(&mcp.Prompt{Name: "test_simple_prompt", Description: "A prompt without arguments"},
		func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{user(&mcp.TextContent{Text: "This is a simple prompt for testing."})}}, nil
		})

	srv.AddPrompt(&mcp.Prompt{
		Name: "test_prompt_with_arguments", Description: "A prompt with two required arguments",
		Arguments: []*mcp.PromptArgument{
			{Name: "arg1", Description: "First test argument", Required: true},
			{Name: "arg2", Description: "Second test argument", Required: true},
		},
	}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		a := req.Params.Arguments
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{user(&mcp.TextContent{
			Text: fmt.Sprintf("Prompt with arguments: arg1='%s', arg2='%s'", a["arg1"], a["arg2"]),
		})}}, nil
	})

	srv.AddPrompt(&mcp.Prompt{
		Name: "test_prompt_with_embedded_resource", Description: "A prompt embedding a resource",
		Arguments: []*mcp.PromptArgument{{Name: "resourceUri", Description: "URI of the resource to embed", Required: true}},
	}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		uri := req.Params.Arguments["resourceUri"]
		if uri == "" {
			return nil, fmt.Errorf("test_prompt_with_embedded_resource needs the argument resourceUri")
		}
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{
			user(&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: uri, MIMEType: "text/plain", Text: "Embedded resource content for testing."}}),
			user(&mcp.TextContent{Text: "Please process the embedded resource above."}),
		}}, nil
	})

	srv.AddPrompt(&mcp.Prompt{Name: "test_prompt_with_image", Description: "A prompt with an image"},
		func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{
				user(&mcp.ImageContent{Data: pngData, MIMEType: "image/png"}),
				user(&mcp.TextContent{Text: "Please analyze the image above."}),
			}}, nil
		})
}

// completions are the values complete offers, by argument name.
var completions = map[string][]string{
	"arg1":        {"paris", "park", "party"},
	"arg2":        {"world", "wonder"},
	"resourceUri": {"test://static-text", "test://static-binary"},
}

// complete offers the values of completions that start with what was typed.
func complete(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	res := &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}
	for _, v := range completions[req.Params.Argument.Name] {
		if strings.HasPrefix(v, req.Params.Argument.Value) {
			res.Completion.Values = append(res.Completion.Values, v)
		}
	}
	res.Completion.Total = len(res.Completion.Values)
	return res, nil
}
